"""Data: video files, TFRecord datasets and the input pipelines of the original training and test protocols.

- `video`: decoding video files with PyAV (upright, as players show them), frames as JPEG;
- `builder`: the TFDS builder, videos and list files (or class folders) to TFRecords;
- `class_folders`: datasets laid out as folders of classes, and their stratified validation split;
- `sources`: reading TFDS directories and DMVR records, one part of a split per process;
- `pipelines`: `tf.data` training and test pipelines (sampling, test views, batches of uint8 clips);
- `windows`: sliding windows over long videos, decoded as a stream (feature extraction);
- `augment`: training augmentation (RandAugment, resized crops, flips, random erasing);
- `image_ops`: PIL's image operations that RandAugment applies, in TensorFlow;
- `class_lists`: class-name lists (`label_maps/`) and the head rows of one class order in another;
- `synthetic`: made-up videos (the demo's moving square);
- `verify`: reading every record file of a dataset, to name a damaged or truncated shard.

Imports: `uniformer_jax.models.layers` (the input normalisation) and nothing else of this package.
"""

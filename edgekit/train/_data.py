"""tf.data pipelines over class folders, decoding and resizing exactly as Keras does."""

from __future__ import annotations

from edgekit.data.folders import ImageFolder


def folder_dataset(tf, folder: ImageFolder, size: tuple[int, int], *, batch_size: int, shuffle: bool,
                   seed: int, cache: bool = True, flip: bool = False):
    """(images float32 0..255 RGB, int labels) batches.

    Decoding is ``tf.io.decode_image`` to 3 channels and resizing is ``tf.image.resize``
    bilinear without antialiasing, as in ``keras.utils.image_dataset_from_directory``;
    the runtime reproduces the same resize. Files are shuffled every epoch after caching.
    ``flip`` adds random horizontal and vertical flips after the cache (training data only;
    augmentation lives in the pipeline, never in the exported model).
    """
    paths = [str(p) for p, _ in folder.samples]
    labels = [i for _, i in folder.samples]
    ds = tf.data.Dataset.from_tensor_slices((paths, labels))

    def load(path, label):
        img = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        img = tf.image.resize(img, size, method="bilinear")
        img.set_shape((size[0], size[1], 3))
        return img, label

    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE)
    if cache:
        ds = ds.cache()
    if shuffle:
        ds = ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    if flip:
        def augment(img, label):
            return tf.image.random_flip_up_down(tf.image.random_flip_left_right(img)), label

        ds = ds.map(augment, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)

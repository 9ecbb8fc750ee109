"""Data: the manifest format, the synthetic data set, patient-level splits and tf.data input.

Importing this package imports neither TensorFlow nor Keras; the tf.data pipeline lives in
:mod:`cervixnet.data.pipeline` and is imported on demand.
"""

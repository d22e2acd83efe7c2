"""Training, evaluation and reports for the segserve models, in two layers.

Libraries, each importing only those listed before it (and ``segserve``): ``formatting`` (how numbers read),
``data`` (dataset pairs, splits, decoding), ``augment``, ``losses``, ``compute`` (TensorFlow threads and
precision), ``sources`` (models from a run folder, models/ or the BentoML store), ``prediction`` (serving's path
for training's measurements), ``metadata`` (a trained model's metadata and ``val_metrics``), ``figures``,
``report`` (metrics.json, report.md, a run's report), ``loop`` (the training loop and its options).

Commands, ``python -m training.<name>``, import libraries and never each other: ``train``, ``finetune``,
``evaluate``, ``export``, ``calibrate``, ``compare``, ``results``, ``step_time``.
"""

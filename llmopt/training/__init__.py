"""Training: the bundled head (head.py) and training in the loop (fine-tune, recover, distil).

``head.py`` sits low (``models`` loads the encoder + head classifier through it); every other
module here sits above ``compression`` and ``evaluation``: ``finetune`` (fine-tune, head re-fit,
recovery), ``gradual`` (pruning on a schedule), ``distill``, ``loop`` (Trainer and callbacks),
``constraints`` (masks, grids and factors kept while training), ``schedules``, ``estimate``.
Nothing is imported here, so loading a model never loads the training stack.
"""

"""Training in the loop: fine-tune, recover, prune gradually, distil.

Every module here sits above ``compression`` and ``evaluation``: ``finetune`` (fine-tune, head
re-fit, recovery), ``gradual`` (pruning on a schedule), ``distill``, ``loop`` (Trainer and
callbacks), ``constraints`` (masks, grids and factors kept while training), ``schedules``,
``timing`` (how long a run will take). The tasks themselves are listed in ``llmopt.tasks``; the
bundled encoder + head classifier (a model type) is ``llmopt.head``. Nothing is imported here,
so loading a model never loads the training stack.
"""

"""Jobs: multi-evaluation work (a sweep today) that survives restarts and runs anywhere.

A job is a list of evaluation tasks, each keyed by the hash of its recipe, the base model's
fingerprint and the evaluated rows' fingerprint (``tasks.task_key``). Each finished task is
recorded in the experiment store by the driver, exactly as a hand-run evaluation is
(``llmopt.recording.record_evaluation``), so re-running a job skips what is recorded. The job
itself (status, progress, the spec, a cancel flag) is a row in the same SQLite store
(``store.JobStore``). Tasks run in-process, in a process pool, or on Ray (``executors``).

Importing this package is light: the modules that need torch import it inside functions.
"""

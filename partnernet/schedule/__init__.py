"""Periodic work that runs by itself (CONTRACT v2 §6): the task list (:mod:`.tasks`), when each is
due (:mod:`.rules`), the run rows that make each due run happen once (:mod:`.runs`), the runners
(:mod:`.runner`: the worker's RQ cron scheduler, or the web process's thread without Redis),
the small tasks (:mod:`.jobs`, :mod:`.retention`) and ``flask schedule`` (:mod:`.cli`)."""

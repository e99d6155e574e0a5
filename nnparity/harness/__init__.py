"""The harness: planning, worker processes, timing, environment capture and the results store.

``plan`` expands the model x backend x device x dtype x repeat matrix into
jobs, and ``inputs`` writes each spec's initial parameters and batch plan
once. ``runner`` starts one ``worker`` process per job, in turn, and
``results`` appends each ``RunRecord`` to ``runs.jsonl`` as it ends.
``environment`` records the machine and software, and ``schedule`` produces
the batch order and the exact-mode dropout masks.
"""

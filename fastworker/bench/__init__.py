"""``fastworker bench``: fastworker side by side with other executors, on this machine.

    command.py   the click command: options in, table (and --json, --plot) out
    runner.py    round-robin over engines and repeats; failures land in their rows
    workloads.py what is run and what one sample means (latency, throughput, map, cpu,
                 payload, startup, memory), sized to a time budget
    engine.py    the adapter every executor is measured through
    ours.py      fastworker: embedded Client, attached Client (+ its control plane), Executor
    peers.py     ProcessPoolExecutor, multiprocessing.Pool, loky, mpire, joblib, dask, Ray
    reference.py the floor (eventfd ping-pong) and the ceiling (plain forked busy loops)
    tasks.py     the functions every engine runs, picklable by reference
    stats.py, report.py, machine.py, plot.py   numbers, table and JSON, machine, chart

Nothing here is imported by ``import fastworker``: the harness costs nothing
to an application that does not run it.
"""

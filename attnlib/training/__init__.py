"""The training wing: one run trained, resumed, recorded and timed, on one device, several, or several processes.

`train` is the loop (fit, evaluate, checkpoints); `measures` what a run records every epoch besides its metrics;
`speed` the options that change float rounding only (TF32, torch.compile, channels-last) and `parity` their
check; `schedule` and `workers` spread independent runs over devices; `process_group` is DDP for one run;
`dry_run` the mode in which every run trains a few steps at its real size; `progress` the bars. It may import the
ground, `results` and `evidence`, nothing above: it knows runs, not notebooks or parameter files.
"""

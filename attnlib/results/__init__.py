"""The results wing: where results go and in what shape, written so that no fault loses or duplicates a row.

results/<profile>/metrics/<experiment>.csv holds one row per (run, epoch) with the columns of
METRIC_COLUMNS. A run's rows are always rewritten whole from its own history (kept inside its
checkpoint), so a resumed run never duplicates or loses a row.

Faults heal where they are found, each with one line saying so: a metrics, centers or attention CSV that is damaged
(cut off, header lost, not a CSV) is moved aside as NAME.csv.damaged and rebuilt from the histories the
checkpoints hold (`read_metrics`); `load_checkpoint` tells a damaged checkpoint from a good one (training
moves it aside as NAME.pt.damaged and starts that run again); temporary files a killed writer left behind
are removed by `remove_stale_temp_files`; damaged runner stamps are dropped (`read_stamps`).

Its modules: `layout` (the columns and where each file lies), `files` (atomic writes, temporary files, locks),
`checkpoints`, `records` (CSV rows read, checked, healed and written), `stamps` (the runner's), `machine` (what
a row says about the machine and the code). Their public names are here: `from attnlib import results;
results.metrics_path(...)`. It may import the ground's `messages`, nothing else of attnlib.
"""
from attnlib.results.checkpoints import CHECKPOINT_KEYS, DamagedCheckpoint, load_checkpoint
from attnlib.results.files import (
                                   atomic_torch_save,
                                   atomic_write_text,
                                   locked,
                                   move_aside,
                                   remove_stale_temp_files,
                                   temp_file,
)
from attnlib.results.layout import (
                                   ATTENTION_COLUMNS,
                                   CENTER_COLUMNS,
                                   METRIC_COLUMNS,
                                   RECORDS,
                                   SHUFFLED_LABELS,
                                   TEXT_COLUMNS,
                                   attention_path,
                                   centers_path,
                                   checkpoint_path,
                                   digest,
                                   figures_dir,
                                   is_control,
                                   metrics_path,
                                   profile_dir,
                                   record_path,
                                   stamps_path,
                                   summary_path,
)
from attnlib.results.machine import cpu_model_and_flags, device_name, git_commit
from attnlib.results.records import DamagedCSV, keep_runs, read_metrics, rebuild_from_checkpoints, write_run_rows
from attnlib.results.stamps import forget_stamps, read_stamps

__all__ = ["ATTENTION_COLUMNS", "CENTER_COLUMNS", "CHECKPOINT_KEYS", "METRIC_COLUMNS", "RECORDS", "SHUFFLED_LABELS",
           "TEXT_COLUMNS", "DamagedCSV", "DamagedCheckpoint", "atomic_torch_save", "atomic_write_text",
           "attention_path", "centers_path", "checkpoint_path", "cpu_model_and_flags", "device_name", "digest",
           "figures_dir", "forget_stamps", "git_commit", "is_control", "keep_runs", "load_checkpoint", "locked",
           "metrics_path", "move_aside", "profile_dir", "read_metrics", "read_stamps", "rebuild_from_checkpoints",
           "record_path", "remove_stale_temp_files", "stamps_path", "summary_path", "temp_file", "write_run_rows"]

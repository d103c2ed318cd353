"""The report wing: the numbers set beside the published ones, the timing of notebook 06, and the report itself.

`tables` holds the published numbers and the accuracy and claim tables; `timing` measures throughput and the
machine's GEMM peak, `timing_table` times the models for notebook 06 and `projection` projects the paper's runs;
`sections` draws notebook 08 section by section; `export` writes report.html and report.pdf. Figures come from
`attnlib.viz`. It may import the experiments wing and everything below it; the explorer and the runner stand
beside and above it.
"""

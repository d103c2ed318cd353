"""The evidence wing: what the paper claims and how this project measures it.

`attention_maps` reads where a network's heads attend (maps, centers, conv-likeness measures); `taps` how far a
layer's heads are from the grid of a convolution's taps; `claims` turns those measures into one verdict per
claim, by its parts, against the same runs at initialisation, and `accuracy_order` judges Table 1's order by
Welch's test; `theorem1` measures notebook 00's construction (Theorem 1) and records it. It may import the
ground (attention, models, data, conv_as_attention, messages) and `results`, nothing above.
"""

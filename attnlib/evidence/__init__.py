"""The evidence wing: what the paper claims and how this project measures it.

`attention_maps` reads where a network's heads attend (maps, centers, conv-likeness measures); `claims` turns
those measures into one verdict per claim, against the same runs at initialisation; `theorem1` measures notebook
00's construction (Theorem 1) and records it. It may import the ground (attention, models, data, conv_as_attention,
messages) and `results`, nothing above.
"""

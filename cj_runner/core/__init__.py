"""Pure core of cj-runner: data in, data out; no I/O, no clocks, randomness passed in.

Only the standard library, numpy and scipy may be imported here.
"""

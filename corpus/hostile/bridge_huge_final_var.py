# threat: a 150 MB FINAL_VAR value, returned to the host uncapped
# expect: error:ValueError
# local: no
# note: the local executor shares the host's memory by design and has no answer cap
big = "z" * (150 << 20)
FINAL_VAR("big")

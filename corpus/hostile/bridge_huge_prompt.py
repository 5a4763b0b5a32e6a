# threat: one 100 MB llm_query prompt, to blow up the host's memory while it relays the call
# expect: error:ValueError
# local: no
# note: the local executor is trusted and has no prompt cap; the engine and the model client bound it there
llm_query("x" * (100 << 20))

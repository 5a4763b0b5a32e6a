# threat: two million prompts in one batch (the host used to match results to calls in quadratic time)
# expect: error:ValueError
# local: no
# note: the local executor has no batch cap; the engine's sub-call budget bounds it there
llm_query_batched(["q"] * 2_000_000)

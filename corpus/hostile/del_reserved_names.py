# threat: delete the reserved REPL functions so later cells (and the engine) lose them
# expect: contained
# local: yes
del llm_query
del llm_query_batched
del FINAL_VAR
del SHOW_VARS
# %%
for name in ["llm_query", "llm_query_batched", "rlm_query", "rlm_query_batched", "FINAL_VAR", "SHOW_VARS"]:
    if name not in globals() or not callable(globals()[name]):
        print("LEAK: reserved name not restored:", name)
print("checked")

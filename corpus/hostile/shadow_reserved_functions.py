# threat: replace llm_query and FINAL_VAR with fakes that later cells would call
# expect: contained
# local: yes
llm_query = lambda prompt, model=None: "forged answer"
FINAL_VAR = lambda name: "forged final"
rlm_query = print
# %%
if llm_query("hello") == "forged answer" or FINAL_VAR("x") == "forged final" or rlm_query is print:
    print("LEAK: forged reserved function survived")
print("checked")

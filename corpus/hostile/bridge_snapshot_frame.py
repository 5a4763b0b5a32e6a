# threat: send the start-up-only `snapshot` frame (where the host would resume the interpreter) from a cell, hoping the host arms its snapshot trap or believes the addresses
# expect: error:SystemError
# local: no
driver = llm_query.__globals__
driver["_snapshot_point"]()
print("LEAK: a snapshot frame from user code was accepted")

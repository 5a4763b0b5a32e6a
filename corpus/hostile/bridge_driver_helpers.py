# threat: reach the driver's own frame writer through a REPL function's globals (the way `import __main__` reached write_frame) and send a forged reply with it
# expect: error:SystemError
# local: no
driver = llm_query.__globals__
driver["_write_all"](driver["_frame"]({"op": "done", "error": None, "dropped": 0, "answer_len": 6, "final_var": None}, b"FORGED"))
print("LEAK: a frame written with the driver's helpers was accepted")

# threat: call the driver's entry point `_main` again from a cell (sessions started from the pre-initialised snapshot are entered through it) to boot a second driver that reads the next job and impersonates the main loop
# expect: error:SystemError
# local: no
driver = llm_query.__globals__
driver["_main"]()
print("LEAK: a second driver started inside the cell")

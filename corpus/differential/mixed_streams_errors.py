# name: stdout and stderr before an uncaught error
# compare: stdout+stderr
import sys
print("step 1")
print("diagnostic", file=sys.stderr)
values = [1, 2, 3]
print("step 2", values)
print(values[10])

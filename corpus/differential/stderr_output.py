# name: stderr via print(file=sys.stderr) and sys.stderr.write
# compare: stdout+stderr
import sys
print("to stdout 1")
print("to stderr 1", file=sys.stderr)
sys.stderr.write("stderr written\n")
print("to stdout 2")
for i in range(3):
    print(f"warning {i}", file=sys.stderr, end="; ")
print(file=sys.stderr)
print("done")

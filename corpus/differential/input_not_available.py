# name: input() has nobody to read from and raises EOFError
# differs: python3's input() writes its prompt to stdout before hitting end of file; the REPL's input() raises EOFError without writing the prompt
try:
    answer = input("question? ")
    print("got", answer)
except EOFError:
    print("EOFError raised")
import sys
print(sys.stdin is not None)

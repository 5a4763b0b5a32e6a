# name: sys.stdout.write and writelines
import sys
n = sys.stdout.write("written directly\n")
sys.stdout.writelines(["one ", "two ", "three\n"])
sys.stdout.write("partial")
sys.stdout.write(" line\n")
sys.stdout.flush()
print("write returned", n)
print(sys.stdout.isatty() in (True, False))

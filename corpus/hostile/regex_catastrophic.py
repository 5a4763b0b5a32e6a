# threat: catastrophic regex backtracking: a busy loop inside one C call
# expect: timeout
# local: no
import re
print(re.match(r"(a+)+$", "a" * 40 + "b"))

# name: find needle lines in the context with re
import re
needles = re.findall(r"^NEEDLE-(\d+): (.*)$", context, re.MULTILINE)
for number, text in needles:
    print(number, "->", text)
code = re.search(r"vault code is ([\w-]+)", context)
print("code:", code.group(1), "at", code.start())
when = re.search(r"(\w+day) (\d{4}-\d{2}-\d{2}) at (\d{2}:\d{2})", context)
print(when.groups())
line_no = context[:code.start()].count("\n") + 1
print("line", line_no)

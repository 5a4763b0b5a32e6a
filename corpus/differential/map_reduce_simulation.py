# name: map-reduce over chunks with a pure-Python stand-in for a sub-model
import re
def fake_model(prompt):
    users = re.findall(r"user=(\w+)", prompt)
    errors = prompt.count(" ERROR ")
    top = max(sorted(set(users)), key=users.count) if users else "none"
    return f"errors={errors} top={top} users={len(users)}"
chunks = [context[i:i + 15000] for i in range(0, len(context), 15000)]
answers = [fake_model(f"Summarise this chunk:\n{c}") for c in chunks]
for i, a in enumerate(answers):
    print(i, a)
total_errors = sum(int(re.search(r"errors=(\d+)", a).group(1)) for a in answers)
print("total errors:", total_errors, "direct:", context.count(" ERROR "))
final = {"chunks": len(chunks), "errors": total_errors}
print(final)

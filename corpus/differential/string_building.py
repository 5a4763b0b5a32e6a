# name: building strings with join, concatenation and io
import io
pieces = [f"<{i}>" for i in range(2000)]
joined = "".join(pieces)
concatenated = ""
for p in pieces:
    concatenated += p
buf = io.StringIO()
for p in pieces:
    buf.write(p)
print(len(joined), joined == concatenated == buf.getvalue(), joined[:20], joined[-12:])
report = "\n".join(f"{i:>4}: {'#' * (i % 17)}" for i in range(0, 100, 9))
print(report)
print(" | ".join(map(str, range(5))), ", ".join(sorted({"b", "a", "c"})))

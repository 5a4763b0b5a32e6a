# name: difflib diffs, ratios and close matches
import difflib
a = ["the quick brown fox", "jumps over", "the lazy dog", "end"]
b = ["the quick brown cat", "jumps over", "a lazy dog", "end", "extra"]
for line in difflib.unified_diff(a, b, fromfile="before", tofile="after", lineterm=""):
    print(line)
print(round(difflib.SequenceMatcher(None, "archive", "achieve").ratio(), 4))
print(difflib.get_close_matches("ledgr", ["ledger", "letter", "lantern", "leader"], n=2))
sm = difflib.SequenceMatcher(None, "abcdef", "abxdeg")
print(sm.get_opcodes())
print(list(difflib.ndiff(["one", "two"], ["one", "too"])))

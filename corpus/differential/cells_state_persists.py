# name: variables, functions and imports persist from one cell to the next
import re
def count_word(text, word):
    return len(re.findall(r"\b" + re.escape(word) + r"\b", text))
totals = {}
# %%
for word in ["river", "archive", "engine"]:
    totals[word] = count_word(context, word)
print(totals)
# %%
best = max(totals, key=totals.get)
print(best, totals[best], re.sub(r"[aeiou]", "*", best))

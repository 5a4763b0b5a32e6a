# name: count_by() and sum_by() rank the values of a field by how many records have them or by a number field's total
print(count_by("action"))
print(count_by("user", "action=login").most_common(2))
top = sum_by("user", "latency_ms")
print(type(top).__name__, isinstance(top, list), top[0], len(top) == len(count_by("user")))
print(sum_by("latency_ms", "user", "action=logout")[:3])
print(dict(sum_by("action", "latency_ms", "user=alice")))
print(count_by("Action", "no-such-word"))
print(len(lines_with("log records", "user=alice")))
print(lines_with("action=fly"))
# %%
print(count_by("no_such_field"))
# %%
print(max(records("latency_ms")))

# threat: rebind context to None so later cells lose the data
# expect: contained
# local: yes
context = None
# %%
if context is None or not isinstance(context, str) or "NEEDLE-1" not in context:
    print("LEAK: context was not restored")
print(len(context) > 100000)

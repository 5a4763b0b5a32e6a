# name: rebinding context in a cell does not survive into the next cell
original_length = len(context)
context = "overwritten"
print(len(context))
# %%
print(len(context) == original_length, context[:26])

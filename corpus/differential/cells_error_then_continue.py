# name: an error in the second cell does not stop the third
data = {"a": 1}
print("cell 1")
# %%
print("cell 2 starts")
value = data["b"]
print("not reached")
# %%
print("cell 3 sees", data, "value" in dir())

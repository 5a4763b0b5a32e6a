# name: a trailing string expression is echoed as its repr; None is never echoed
# differs: the REPL echoes repr() of the trailing string expression; plain python3 prints nothing for it
print("first")
# %%
print("second")
None
# %%
"a 'quoted' string\n" + "tail"

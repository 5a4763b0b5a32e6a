# name: where the last statement of a cell begins: lines continued by brackets, backslashes and strings
# differs: the REPL echoes the repr of a trailing expression that is not None; plain python3 exec does not
f = lambda *v: v
f(1,
2)
# %%
f(3
  )
# %%
s = 'ab\
cd'
s
# %%
t = '''x
len(t)
'''
t
# %%
v = 1 +\
2
v
# %%
print('a'); 5
# %%
1;
# %%
for i in range(2):
    i
# %%
if True:
    5
7
# %%
*z, = [1, 2]
z
# %%
y := 5
# %%
x for x in 'ab'
# %%
def h(:
5
# %%
return 6
7
# %%
a = 1
undefined_name + a

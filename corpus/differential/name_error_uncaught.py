# name: an undefined name ends the cell with NameError
print("before")
print(undefined_variable_name)

# stand-in for the record script (the audit and init read only its bytes)
print("train")

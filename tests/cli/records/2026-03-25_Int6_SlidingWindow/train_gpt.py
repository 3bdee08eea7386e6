print("int6 sliding")

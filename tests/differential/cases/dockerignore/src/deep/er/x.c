src/deep/er/x.c

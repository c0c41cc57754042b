"""Operations (§C.2): one module per family, each operation a pure command plan."""

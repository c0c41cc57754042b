"""CKE in Python: the pure decision core. Import values and functions from here."""

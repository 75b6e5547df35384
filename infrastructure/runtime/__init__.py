"""What joins the write side (``infrastructure``) and the read models (``projections``):
the bootstrap that builds each process, the relay and the queue monitor."""

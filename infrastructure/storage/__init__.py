"""What the write side and the read models both stand on: the column types of their
tables, the followers' positions, many rows in one statement, and the event log as a
follower reads it."""

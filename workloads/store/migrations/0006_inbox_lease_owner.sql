-- The owner of a forwarding lease: a random token the worker writes with each lease. Renewing
-- the lease, recording a failure, storing the answer and marking the row replied only succeed
-- while the row still carries the worker's token, so a worker that stalled past its lease (the
-- row since taken by another) can no longer overwrite the new owner's work or mark the row
-- replied; it stops instead.
ALTER TABLE gateway_inbox ADD COLUMN lease_owner TEXT;

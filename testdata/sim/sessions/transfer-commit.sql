-- A transfer committed through the proxy in one transaction on one backend, read back,
-- then inserted again outside a block: the primary key refuses the duplicate.
BEGIN
SELECT pg_backend_pid()
UPDATE accounts SET balance = balance - 3 WHERE id = 1
UPDATE accounts SET balance = balance + 3 WHERE id = 2
INSERT INTO transfers (id, from_id, to_id, amount) VALUES (:id, 1, 2, 3)
COMMIT
SELECT balance FROM accounts WHERE id = 1
SELECT sum(balance) FROM accounts
SELECT count(*) FROM transfers
-- expect: 23505
INSERT INTO transfers VALUES (:id, 1, 2, 3)

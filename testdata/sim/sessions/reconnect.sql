-- A client that leaves mid-transaction (a polite close: the proxy must roll the block back),
-- short sleeps, and reads on a fresh connection.
BEGIN
UPDATE accounts SET balance = balance - 2 WHERE id = 5
UPDATE accounts SET balance = balance + 2 WHERE id = 6
INSERT INTO transfers VALUES (:id, 5, 6, 2)
SELECT pg_sleep(0.05)
-- reconnect
SELECT balance FROM accounts WHERE id = 5
SELECT pg_sleep(0.02)
SELECT id, balance FROM accounts ORDER BY id
END

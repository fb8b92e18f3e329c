-- A duplicate transfer id inside a transaction (23505), the block failed after it, and a
-- ROLLBACK; then a write rolled back explicitly, and an UPDATE that overflows the balance.
BEGIN
INSERT INTO transfers VALUES (:id, 4, 5, 4)
-- expect: 23505
INSERT INTO transfers VALUES (:id, 4, 5, 4)
-- expect: 25P02
SELECT balance FROM accounts WHERE id = 4
ROLLBACK
START TRANSACTION
UPDATE accounts SET balance = balance - 7 WHERE id = 6
UPDATE accounts SET balance = balance + 7 WHERE id = 1
SELECT balance FROM accounts WHERE id = 6
ROLLBACK
-- expect: 22003
UPDATE accounts SET balance = balance + 3000000000 WHERE id = 2
-- COMMIT and ROLLBACK outside a block are warnings, not errors
COMMIT
ROLLBACK

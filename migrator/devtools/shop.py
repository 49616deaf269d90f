"""The demo shop database: customers, products, orders, order_items, and a catalog
(departments, categories, product_categories: a many-to-many) (used by the demo, the tests and
the benchmarks)."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

SCHEMA = [
    """CREATE TABLE customers (
        id INT PRIMARY KEY AUTO_INCREMENT,
        email VARCHAR(190) NOT NULL UNIQUE,
        name VARCHAR(100) NOT NULL,
        vip TINYINT(1) NOT NULL DEFAULT 0,
        created_at DATETIME(3) NOT NULL
    ) ENGINE=InnoDB""",
    """CREATE TABLE products (
        id INT PRIMARY KEY AUTO_INCREMENT,
        sku VARCHAR(32) NOT NULL UNIQUE,
        title VARCHAR(200) NOT NULL,
        price DECIMAL(10,2) NOT NULL,
        tags SET('new','sale','eco','gift') NOT NULL DEFAULT ''
    ) ENGINE=InnoDB""",
    """CREATE TABLE orders (
        id BIGINT PRIMARY KEY AUTO_INCREMENT,
        order_no VARCHAR(20) NOT NULL,
        customer_id INT NULL,
        status ENUM('new','paid','shipped','cancelled') NOT NULL DEFAULT 'new',
        total DECIMAL(12,2) NOT NULL DEFAULT 0,
        note TEXT NULL,
        legacy_flag TINYINT NOT NULL DEFAULT 0,
        created_at DATETIME NOT NULL,
        CONSTRAINT fk_orders_customer FOREIGN KEY (customer_id) REFERENCES customers(id)
            ON DELETE SET NULL
    ) ENGINE=InnoDB""",
    """CREATE TABLE order_items (
        order_id BIGINT NOT NULL,
        line_no SMALLINT NOT NULL,
        product_id INT NOT NULL,
        qty INT NOT NULL,
        unit_price DECIMAL(10,2) NOT NULL,
        PRIMARY KEY (order_id, line_no),
        CONSTRAINT fk_items_order FOREIGN KEY (order_id) REFERENCES orders(id) ON DELETE CASCADE,
        CONSTRAINT fk_items_product FOREIGN KEY (product_id) REFERENCES products(id)
    ) ENGINE=InnoDB""",
    """CREATE TABLE departments (
        id INT PRIMARY KEY,
        name VARCHAR(60) NOT NULL
    ) ENGINE=InnoDB""",
    """CREATE TABLE categories (
        id INT PRIMARY KEY,
        name VARCHAR(60) NOT NULL,
        department_id INT NULL,
        CONSTRAINT fk_categories_department FOREIGN KEY (department_id)
            REFERENCES departments(id) ON DELETE SET NULL
    ) ENGINE=InnoDB""",
    """CREATE TABLE product_categories (
        product_id INT NOT NULL,
        category_id INT NOT NULL,
        PRIMARY KEY (product_id, category_id),
        KEY (category_id),
        CONSTRAINT fk_pc_product FOREIGN KEY (product_id) REFERENCES products(id)
            ON DELETE CASCADE,
        CONSTRAINT fk_pc_category FOREIGN KEY (category_id) REFERENCES categories(id)
            ON DELETE CASCADE
    ) ENGINE=InnoDB""",
]

# The demo's catalog: each product with its categories (a many-to-many through
# product_categories, the category merged into each element, its department nested in it) and
# the category names as an array of values.
CATALOG = """\
  - name: products
    from: products
    embed:
      - as: categories
        from: product_categories
        on: {{product_id: id}}
        many: true
        exclude: [product_id]
        embed:
          - from: categories
            on: {{id: category_id}}
            many: false
            merge: true
            exclude: [id]
            embed:
              - {{as: department, from: departments, on: {{id: department_id}}, many: false}}
      - as: category_names
        from: product_categories
        on: {{product_id: id}}
        many: true
        values: category.name
        embed:
          - {{as: category, from: categories, on: {{id: category_id}}, many: false}}
"""

MAPPING = """\
# The demo shop: one document per order, its items embedded, its customer as a sub-document.
version: 1
source:
  url: "{mysql_url}"
target:
  url: "{mongo_url}"
  database: {target_db}
state:
  database: {state_db}
backfill:
  chunk_size: {chunk_size}
collections:
  - name: orders
    from: orders
    fields:
      orderNo: order_no
      total: {{column: total, type: decimal}}
      placedAt: created_at
    exclude: [legacy_flag]
    embed:
      - as: items
        from: order_items
        on: {{order_id: id}}
        many: true
        order_by: [line_no]
        exclude: [order_id]
      - as: customer
        from: customers
        on: {{id: customer_id}}
        many: false
        all_columns: false
        fields: {{id: id, email: email, name: name}}
  - name: customers
    from: customers
  - name: products
    from: products
"""


def create_shop(
    conn: Any,
    database: str,
    *,
    customers: int = 50,
    products: int = 20,
    orders: int = 200,
    seed: int = 7,
) -> dict[str, int]:
    """(Re)create the shop database and fill it; returns row counts per table."""
    rnd = random.Random(seed)
    cur = conn.cursor()
    cur.execute(f"DROP DATABASE IF EXISTS `{database}`")
    cur.execute(f"CREATE DATABASE `{database}` CHARACTER SET utf8mb4")
    cur.execute(f"USE `{database}`")
    for stmt in SCHEMA:
        cur.execute(stmt)
    base = datetime(2024, 1, 1)
    cur.executemany(
        "INSERT INTO customers (id, email, name, vip, created_at) VALUES (%s, %s, %s, %s, %s)",
        [
            (
                i,
                f"user{i}@example.com",
                f"Customer {i}",
                int(rnd.random() < 0.1),
                base + timedelta(minutes=i, milliseconds=rnd.randrange(1000)),
            )
            for i in range(1, customers + 1)
        ],
    )
    tags = ["", "new", "sale", "eco", "new,gift", "sale,eco"]
    cur.executemany(
        "INSERT INTO products (id, sku, title, price, tags) VALUES (%s, %s, %s, %s, %s)",
        [
            (
                i,
                f"SKU-{i:05d}",
                f"Product {i}",
                f"{rnd.randrange(100, 100000) / 100:.2f}",
                rnd.choice(tags),
            )
            for i in range(1, products + 1)
        ],
    )
    order_rows, item_rows = _orders(rnd, base, orders, customers, products)
    cur.executemany(
        "INSERT INTO orders (id, order_no, customer_id, status, total, note, created_at) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s)",
        order_rows,
    )
    if item_rows:
        cur.executemany(
            "INSERT INTO order_items (order_id, line_no, product_id, qty, unit_price) "
            "VALUES (%s, %s, %s, %s, %s)",
            item_rows,
        )
    links = _catalog(cur, products, random.Random(seed + 1))
    conn.commit()
    return {
        "customers": customers,
        "products": products,
        "orders": orders,
        "order_items": len(item_rows),
        "product_categories": links,
    }


def _orders(
    rnd: random.Random, base: datetime, orders: int, customers: int, products: int
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Order rows and their item rows (0-4 lines each; 5% of orders without a customer)."""
    order_rows: list[tuple[Any, ...]] = []
    item_rows: list[tuple[Any, ...]] = []
    for o in range(1, orders + 1):
        lines = rnd.randrange(0, 5)
        total = 0.0
        for ln in range(1, lines + 1):
            price = rnd.randrange(100, 10000) / 100
            qty = rnd.randrange(1, 4)
            total += price * qty
            item_rows.append((o, ln, rnd.randrange(1, products + 1), qty, f"{price:.2f}"))
        cust = rnd.randrange(1, customers + 1) if rnd.random() > 0.05 else None
        order_rows.append(
            (
                o,
                f"SO-{o:07d}",
                cust,
                rnd.choice(["new", "paid", "shipped"]),
                f"{total:.2f}",
                rnd.choice([None, "leave at door", "gift 🎁"]),
                base + timedelta(hours=o),
            )
        )
    return order_rows, item_rows


DEPARTMENTS = ["Home", "Garden", "Kitchen"]
CATEGORIES = ["Lamps", "Chairs", "Tools", "Seeds", "Pots", "Knives", "Pans", "Gifts"]


def _catalog(cur: Any, products: int, rnd: random.Random) -> int:
    """Departments, categories and 0-3 categories per product (its own random stream: the
    rest of the shop stays what it was)."""
    cur.executemany(
        "INSERT INTO departments VALUES (%s, %s)", list(enumerate(DEPARTMENTS, start=1))
    )
    cur.executemany(
        "INSERT INTO categories VALUES (%s, %s, %s)",
        [(i, name, (i - 1) % len(DEPARTMENTS) + 1) for i, name in enumerate(CATEGORIES, 1)],
    )
    links = sorted(
        {
            (p, rnd.randrange(1, len(CATEGORIES) + 1))
            for p in range(1, products + 1)
            for _ in range(rnd.randrange(0, 4))
        }
    )
    if links:
        cur.executemany("INSERT INTO product_categories VALUES (%s, %s)", links)
    return len(links)


def shop_mapping(
    mysql_url: str,
    mongo_url: str,
    *,
    target_db: str = "shop",
    state_db: str = "_migrator",
    chunk_size: int = 100,
    catalog: bool = False,
) -> str:
    """The shop's mapping; `catalog`: products nest their categories (the demo's)."""
    text = MAPPING
    if catalog:
        text = text.replace("  - name: products\n    from: products\n", CATALOG)
    return text.format(
        mysql_url=mysql_url,
        mongo_url=mongo_url,
        target_db=target_db,
        state_db=state_db,
        chunk_size=chunk_size,
    )


class CatalogLoad:
    """The shop's back office, writing MySQL before the write switch: categories renamed (one
    row copied into many products), moved to another department (a nested row's parent
    changes), products linked to and unlinked from categories, a link moved to another
    product."""

    def __init__(self, conn: Any, products: int, *, seed: int = 17) -> None:
        self.conn = conn
        self.products = products
        self.rnd = random.Random(seed)
        self.counts = {"renamed": 0, "moved": 0, "linked": 0, "unlinked": 0, "relinked": 0}

    def step(self) -> None:
        rnd, cur = self.rnd, self.conn.cursor()
        cat = rnd.randrange(1, len(CATEGORIES) + 1)
        product = rnd.randrange(1, self.products + 1)
        kind = rnd.choice(list(self.counts))
        if kind == "renamed":
            cur.execute(
                "UPDATE categories SET name = %s WHERE id = %s",
                (f"{CATEGORIES[cat - 1]} {rnd.randrange(100)}", cat),
            )
        elif kind == "moved":
            cur.execute(
                "UPDATE categories SET department_id = %s WHERE id = %s",
                (rnd.randrange(1, len(DEPARTMENTS) + 1), cat),
            )
        elif kind == "linked":
            cur.execute("INSERT IGNORE INTO product_categories VALUES (%s, %s)", (product, cat))
        elif kind == "unlinked":
            cur.execute("DELETE FROM product_categories WHERE product_id = %s LIMIT 1", (product,))
        else:
            cur.execute(
                "UPDATE IGNORE product_categories SET product_id = %s WHERE product_id = %s "
                "LIMIT 1",
                (product, rnd.randrange(1, self.products + 1)),
            )
        self.conn.commit()
        self.counts[kind] += cur.rowcount > 0


class ShopWriter:
    """Writes like the shop application: new orders with items, status changes, item edits,
    customer renames, deletions. Used by the demo (live writes during the migration)."""

    def __init__(self, conn: Any, *, first_order: int = 1_000_000, seed: int = 11) -> None:
        self.conn = conn
        self.rnd = random.Random(seed)
        self.next_order = first_order
        self.transactions = 0

    def step(self) -> None:
        rnd, cur = self.rnd, self.conn.cursor()
        o = self.next_order
        self.next_order += 1
        cur.execute("START TRANSACTION")
        cur.execute("SELECT MAX(id) FROM customers")
        max_customer = int(cur.fetchone()[0] or 1)
        cur.execute(
            "INSERT INTO orders (id, order_no, customer_id, status, total, created_at) "
            "VALUES (%s, %s, %s, 'new', 0, NOW())",
            (o, f"SO-{o}", rnd.randrange(1, max_customer + 1)),
        )
        for line in range(1, rnd.randrange(2, 5)):
            cur.execute(
                "INSERT INTO order_items VALUES (%s, %s, 1, %s, 9.99)",
                (o, line, rnd.randrange(1, 4)),
            )
        kind = rnd.randrange(4)
        if kind == 0:
            cur.execute("UPDATE orders SET status = 'paid' WHERE id = %s", (o - 1,))
        elif kind == 1:
            cur.execute("UPDATE order_items SET qty = qty + 1 WHERE order_id = %s", (o - 2,))
        elif kind == 2:
            cur.execute(
                "UPDATE customers SET name = CONCAT('Customer ', id, ' (renamed)') WHERE id = %s",
                (rnd.randrange(1, max_customer + 1),),
            )
        else:
            cur.execute("DELETE FROM orders WHERE id = %s", (o - 3,))
        cur.execute("COMMIT")
        self.transactions += 1


class AppLoad:
    """The shop application writing through the dual-write SDK (any object with insert, update,
    delete and get): new orders with items, status changes, item edits, deletions."""

    def __init__(
        self, writer: Any, *, first_order: int = 2_000_000, customers: int = 10, seed: int = 13
    ) -> None:
        self.w = writer
        self.rnd = random.Random(seed)
        self.next_order = first_order
        self.customers = customers
        self.writes = 0
        self.retries = 0

    def step(self) -> None:
        from migrator.cutover.sdk import WritesFrozen

        o = self.next_order
        ops = [
            lambda: self.w.insert(
                "orders",
                {
                    "id": o,
                    "order_no": f"APP-{o}",
                    "customer_id": self.rnd.randrange(1, self.customers + 1),
                    "status": "new",
                    "total": "0.00",
                    "created_at": "2024-07-01 12:00:00",
                },
            ),
            lambda: self.w.insert(
                "order_items",
                {
                    "order_id": o,
                    "line_no": 1,
                    "product_id": 1,
                    "qty": self.rnd.randrange(1, 5),
                    "unit_price": "3.50",
                },
            ),
        ]
        if o > 2_000_001:
            ops.append(lambda: self.w.update("orders", {"id": o - 1}, {"status": "paid"}))
        if o > 2_000_003 and self.rnd.random() < 0.3:
            ops.append(lambda: self.w.delete("order_items", {"order_id": o - 3, "line_no": 1}))
        for op in ops:
            while True:
                try:
                    op()
                    self.writes += 1
                    break
                except WritesFrozen:  # the write switch: retry, as an application would
                    self.retries += 1
        self.next_order += 1

"""Customers, products and prices.
"""
from __future__ import annotations

from typing import Any

from . import shapes
from .core import PRIVATE
from .params import allow, boolean, choice, integer, invalid, metadata, require, string, text


class Catalog:
    """Mixin of the simulator: every method runs inside `_action()` (the lock is held)."""

    def api_customers_create(self, p: dict) -> dict:
        allow(p, ("email", "name", "description", "metadata", "phone", "preferred_locales"))
        obj = shapes.customer(shapes.new_id("cus_", 14), self.now(),
                              string(p["email"], "email", 512) if p.get("email") else None,
                              string(p["name"], "name", 256) if p.get("name") else None,
                              string(p["description"], "description") if p.get("description") else None,
                              metadata(p.get("metadata", {})))
        self._store("customer", obj)
        self._emit("customer.created", obj)
        return self._render(obj)

    def _customer(self, customer_id: Any, param: str = "id") -> dict:
        obj = self._get("customer", customer_id, param)
        if obj.get(PRIVATE + "deleted"):
            raise invalid(f"No such customer: '{customer_id}'", param=param, code="resource_missing")
        return obj

    def api_customers_retrieve(self, customer_id: str) -> dict:
        obj = self._get("customer", customer_id)
        if obj.get(PRIVATE + "deleted"):
            return {"id": obj["id"], "object": "customer", "deleted": True}
        return self._render(obj)

    def api_customers_update(self, customer_id: str, p: dict) -> dict:
        allow(p, ("email", "name", "description", "metadata", "phone"))
        obj = self._customer(customer_id)
        with self._changing(obj, "customer.updated"):
            for field, limit in (("email", 512), ("name", 256), ("description", 5000), ("phone", 20)):
                if field in p:
                    obj[field] = string(p[field], field, limit) or None
            if "metadata" in p:
                obj["metadata"] = metadata(p["metadata"], current=obj["metadata"])
        return self._render(obj)

    def api_customers_delete(self, customer_id: str) -> dict:
        obj = self._customer(customer_id)
        for sub in self._newest_first("subscription"):
            if sub["customer"] == obj["id"] and sub["status"] not in ("canceled", "incomplete_expired"):
                self._end_subscription(sub, "cancellation_requested", immediately=True)
        obj[PRIVATE + "deleted"] = True
        self._emit("customer.deleted", obj)
        return {"id": obj["id"], "object": "customer", "deleted": True}

    def api_customers_list(self, p: dict) -> dict:
        email = p.pop("email", None)
        return self._page("customer", p, "/v1/customers",
                          lambda c: not c.get(PRIVATE + "deleted") and (email is None or c["email"] == email))

    def set_payment_failure(self, customer_id: str, failing: bool = True) -> None:
        """From now on the customer's card declines (or works again)."""
        with self._action():
            self._customer(customer_id)[PRIVATE + "failing"] = bool(failing)

    def ensure_price(self, price_id: str, unit_amount: int, product_name: str, interval: str | None = "month",
                     currency: str = "usd", interval_count: int = 1) -> dict:
        """A price with our own id (a recurring one unless interval is None), created once."""
        with self._action():
            existing = self.objects["price"].get(price_id)
            if existing:
                recurring = existing["recurring"] or {}
                if (existing["unit_amount"], existing["currency"], recurring.get("interval")) != (
                        unit_amount, currency, interval):
                    raise ValueError(f"price {price_id} exists with other terms (prices cannot change)")
                return self._render(existing)
            product = next((p for p in self.objects["product"].values() if p["name"] == product_name), None)
            if product is None:
                product = self._store("product", shapes.product(shapes.new_id("prod_", 14), self.now(), product_name))
                self._emit("product.created", product)
            price = self._store("price", shapes.price(price_id, self.now(), product["id"], int(unit_amount), currency,
                                                      interval, interval_count))
            if product["default_price"] is None:
                product["default_price"] = price_id
            self._emit("price.created", price)
            return self._render(price)

    def api_products_create(self, p: dict) -> dict:
        allow(p, ("id", "name", "description", "metadata", "active"))
        name = string(require(p, "name"), "name", 250)
        product_id = string(p["id"], "id", 200) if p.get("id") else shapes.new_id("prod_", 14)
        if product_id in self.objects["product"]:
            raise invalid(f"Product already exists.", param="id", code="resource_already_exists")
        product = shapes.product(product_id, self.now(), name)
        product["description"] = text(p, "description")
        product["metadata"] = metadata(p.get("metadata", {}))
        self._store("product", product)
        self._emit("product.created", product)
        return self._render(product)

    def api_prices_create(self, p: dict) -> dict:
        allow(p, ("currency", "unit_amount", "product", "product_data", "recurring", "nickname", "lookup_key",
                  "metadata", "active", "tax_behavior"))
        price = self._new_price(p, "")
        self._emit("price.created", price)
        return self._render(price)

    def _new_price(self, p: dict, prefix: str) -> dict:
        """A price from `price` / `price_data` parameters (`prefix` names them in errors)."""
        currency = string(require(p, "currency", f"{prefix}currency" if prefix else None),
                          f"{prefix}currency", 3).lower()
        if currency != "usd":
            raise invalid(f"The simulator's account only settles usd, not {currency}.", param=f"{prefix}currency")
        unit_amount = integer(require(p, "unit_amount", f"{prefix}unit_amount" if prefix else None),
                              f"{prefix}unit_amount", 0, 99_999_999)
        if p.get("product"):
            product = self._get("product", p["product"], f"{prefix}product")
        elif p.get("product_data"):
            data = allow(p["product_data"], ("name", "description", "metadata"), f"{prefix}product_data")
            product = self._store("product", shapes.product(
                shapes.new_id("prod_", 14), self.now(),
                string(require(data, "name", f"{prefix}product_data[name]"), f"{prefix}product_data[name]", 250)))
            self._emit("product.created", product)
        else:
            raise invalid(f"Missing required param: {prefix}product.", param=f"{prefix}product",
                          code="parameter_missing")
        interval, count = None, 1
        if p.get("recurring"):
            recurring = allow(p["recurring"], ("interval", "interval_count", "usage_type"), f"{prefix}recurring")
            interval = choice(require(recurring, "interval", f"{prefix}recurring[interval]"),
                              f"{prefix}recurring[interval]", ("day", "week", "month", "year"))
            count = integer(recurring.get("interval_count", 1), f"{prefix}recurring[interval_count]", 1, 12)
        price = shapes.price(shapes.new_id("price_"), self.now(), product["id"], unit_amount, currency, interval,
                             count, nickname=text(p, "nickname", f"{prefix}nickname"),
                             lookup_key=text(p, "lookup_key", f"{prefix}lookup_key", 200),
                             metadata=metadata(p.get("metadata", {})))
        return self._store("price", price)

    def api_prices_list(self, p: dict) -> dict:
        product, active = p.pop("product", None), p.pop("active", None)
        wanted = None if active is None else boolean(active, "active")
        return self._page("price", p, "/v1/prices", lambda o: (product is None or o["product"] == product)
                          and (wanted is None or o["active"] == wanted))

    def _price(self, price_id: Any, param: str, recurring: bool | None = None) -> dict:
        price = self._get("price", price_id, param)
        if recurring is True and not price["recurring"]:
            raise invalid(f"The price specified is set to `type=one_time` but this field only accepts prices "
                          f"with `type=recurring`.", param=param)
        return price

    def _name(self, price: dict) -> str:
        product = self.objects["product"].get(price["product"])
        return product["name"] if product else (price["nickname"] or price["id"])

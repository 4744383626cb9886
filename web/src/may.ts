// What the signed-in person may change, for enabling buttons: a courtesy, computed from the
// same public API. The server still decides every call.
import { useEffect, useState } from "preact/hooks";

import { api, currentSession, isAdmin } from "./api";
import { GroupService } from "./gen/fluxgate/v1/groups_pb";

/** Why a portfolio's contents are read-only for someone who does not manage it. */
export const NOT_MANAGER = "Only Team Admins and this portfolio's Administrators can change it";

const known = new Map<string, Promise<boolean>>();

/** `portfolios/P` of any name under it (`portfolios/P/applications/A/…`). */
export function portfolioOf(name: string): string {
  return name.split("/").slice(0, 2).join("/");
}

/** Whether the caller manages `portfolio`: a Team Admin, or a member of its Administrators. */
export function managesPortfolio(portfolio: string): Promise<boolean> {
  const s = currentSession();
  if (isAdmin(s)) return Promise.resolve(true);
  if (!s || !portfolio) return Promise.resolve(false);
  const key = `${s.user.name} ${portfolio}`;
  let p = known.get(key);
  if (!p) {
    p = api(GroupService)
      .listGroups({ parent: portfolio, member: s.user.name, pageSize: 100 })
      .then((r) => r.groups.some((g) => g.administrators))
      .catch(() => false);
    known.set(key, p);
  }
  return p;
}

/** The same as a hook: `true` until known otherwise, so nothing flickers for those who may. */
export function useManages(name: string): boolean {
  const portfolio = portfolioOf(name);
  const [may, setMay] = useState(isAdmin(currentSession()));
  useEffect(() => {
    let live = true;
    void managesPortfolio(portfolio).then((m) => live && setMay(m));
    return () => {
      live = false;
    };
  }, [portfolio]);
  return may;
}

/*! core-api pixel, docs/pixel.md */
(function(w,d){"use strict";
var s=d.currentScript,n=w.navigator,l=w.location,h=w.history,
a=function(k){return s.getAttribute("data-"+k)},
base=a("api")||s.src.replace(/\/pixel\.js([?#].*)?$/,""),
q=(w.pixel&&w.pixel.q)||[],cfg,last,ref=d.referrer,
skip=l.protocol=="file:"||
(a("allow-localhost")==null&&/^(localhost|127(\.\d+){3}|\[::1\]|0\.0\.0\.0)$|\.localhost$/.test(l.hostname))||
(a("allow-automation")==null&&!!(n.webdriver||w._phantom||w.__nightmare||w.Cypress||/HeadlessChrome/.test(n.userAgent)));
function url(){var r=/^#!?\//.exec(l.hash);
return l.origin+(r?l.pathname.replace(/\/$/,"")+l.hash.slice(r[0].length-1):l.pathname)+l.search}
function send(e,p){
if(skip||!cfg||!cfg.enabled||!cfg.features[e=="pageview"?"pageviews":"events"])return;
var u=url(),b={event:e,url:u,referrer:ref||null},t=base+"/track";
if(p)b.properties=p;
if(e=="pageview")ref=u;
b=JSON.stringify(b);
try{if(n.sendBeacon(t,b))return}catch(x){}
fetch(t,{method:"POST",body:b,keepalive:true,credentials:"omit",headers:{"Content-Type":"text/plain"}}).catch(function(){})}
function page(){var u=url();if(u!=last){last=u;send("pageview")}}
w.pixel=function(e,p){cfg?send(String(e),p):q.push([e,p])};
if(skip||!w.fetch)return;
fetch(base+"/config?site="+encodeURIComponent(a("site")||l.hostname),{credentials:"omit"})
.then(function(r){return r.json()})
.then(function(c){cfg=c;page();q.forEach(function(x){send(String(x[0]),x[1])})})
.catch(function(){});
if(h.pushState){var p=h.pushState;h.pushState=function(){p.apply(this,arguments);page()};w.addEventListener("popstate",page)}
w.addEventListener("hashchange",page)
})(window,document);
